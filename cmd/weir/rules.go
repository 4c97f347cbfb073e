package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/weirmetrics/weir/alerter"
)

// runRules is `weir rules check FILE…` and `weir rules test FILE…`.
func runRules(_ context.Context, fs *flag.FlagSet, args []string, stdout io.Writer) error {
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage of weir rules:")
		fmt.Fprintln(fs.Output(), "  weir rules check FILE…   validate rule files (file:line:column for every error)")
		fmt.Fprintln(fs.Output(), "  weir rules test FILE…    run rule unit tests (the promtool test rules layout)")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() < 2 {
		fs.Usage()
		return errUsage
	}
	files := fs.Args()[1:]
	var errs []error
	switch fs.Arg(0) {
	case "check":
		for _, f := range files {
			rs, err := alerter.LoadRules([]string{f}, time.Minute)
			if err != nil {
				fmt.Fprintf(stdout, "FAIL %s\n", f)
				errs = append(errs, err)
				continue
			}
			n := 0
			for _, g := range rs.Groups {
				n += len(g.Rules)
			}
			fmt.Fprintf(stdout, "ok   %s: %d groups, %d rules\n", f, len(rs.Groups), n)
		}
	case "test":
		for _, f := range files {
			if err := alerter.TestRules(f, stdout); err != nil {
				errs = append(errs, err)
			}
		}
	default:
		fs.Usage()
		return errUsage
	}
	return errors.Join(errs...)
}
