package alerter

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

var (
	vectorType = reflect.TypeOf(Vector{})
	// ErrUnknownFunction, ErrBadArg (a bad matcher or range), ErrWrongType
	// and ErrCompile classify what `weir rules check` reports.
	ErrCompile         = errors.New("expression does not compile")
	ErrUnknownFunction = errors.New("unknown function or name")
	ErrWrongType       = errors.New("expression has the wrong type")
	ErrBadArg          = errors.New("bad argument")
)

var aggregations = []string{"sum_by", "avg_by", "min_by", "max_by", "count_by"}

// functionNames lists the rule language, for the documentation test.
func functionNames() []string {
	names := []string{"series", "absent_over_time", "histogram_quantile"}
	for n := range rangeFuncs {
		names = append(names, n)
	}
	names = append(names, aggregations...)
	slices.Sort(names)
	return names
}

// exprOptions builds the environment of the rule language over ec.
func exprOptions(ec *evalCtx) []expr.Option {
	opts := []expr.Option{
		expr.Env(map[string]any{}),
		expr.Function("series", ec.series, new(func(string, ...string) Vector)),
		expr.Function("histogram_quantile", histogramQuantile,
			new(func(float64, Vector) Vector), new(func(int, Vector) Vector)),
		expr.Function("absent_over_time", ec.rangeCall("absent_over_time", nil), new(func(Vector, string) Vector)),
	}
	for name, f := range rangeFuncs {
		opts = append(opts, expr.Function(name, ec.rangeCall(name, f), new(func(Vector, string) Vector)))
	}
	for _, name := range aggregations {
		opts = append(opts, expr.Function(name, func(args ...any) (any, error) { return aggregate(name, args) },
			new(func(Vector, ...string) Vector)))
	}
	for _, op := range binOps {
		types := []any{
			new(func(Vector, Vector) Vector),
			new(func(Vector, float64) Vector), new(func(Vector, int) Vector),
			new(func(float64, Vector) Vector), new(func(int, Vector) Vector),
		}
		opts = append(opts, expr.Function(op.name, func(args ...any) (any, error) { return op.apply(args[0], args[1]) }, types...),
			expr.Operator(op.token, op.name))
	}
	return opts
}

// compiled is one checked expression and the selections it reads.
type compiled struct {
	prog *vm.Program
	sels []*selection
}

// ExprError is an error at a position inside an expression.
type ExprError struct {
	Line, Column int // 1-based, within the expression
	Err          error
}

func (e *ExprError) Error() string { return e.Err.Error() }
func (e *ExprError) Unwrap() error { return e.Err }

// compileExpr compiles src against ec and checks what the compiler cannot:
// series() arguments are literals with valid matchers, ranges are literal
// durations, and the result is a vector, a bool or a number.
func compileExpr(src string, ec *evalCtx) (*compiled, error) {
	prog, err := expr.Compile(src, exprOptions(ec)...)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			if name, ok := strings.CutPrefix(fe.Message, "unknown name "); ok {
				return nil, &ExprError{Line: fe.Line, Column: fe.Column + 1, Err: fmt.Errorf("%w %s (the functions are %s)", ErrUnknownFunction, name, strings.Join(functionNames(), ", "))}
			}
			return nil, &ExprError{Line: fe.Line, Column: fe.Column + 1, Err: fmt.Errorf("%w: %s", ErrCompile, fe.Message)}
		}
		return nil, &ExprError{Line: 1, Column: 1, Err: fmt.Errorf("%w: %v", ErrCompile, err)}
	}
	c := &compiled{prog: prog}
	var walkErr error
	seen := map[string]*selection{}
	v := visitor(func(n *ast.Node) {
		if walkErr != nil {
			return
		}
		call, ok := (*n).(*ast.CallNode)
		if !ok {
			return
		}
		id, ok := call.Callee.(*ast.IdentifierNode)
		if !ok {
			return
		}
		at := func(err error) error {
			line, col := position(src, (*n).Location().From)
			return &ExprError{Line: line, Column: col, Err: err}
		}
		switch {
		case id.Value == "series":
			strs := make([]string, 0, len(call.Arguments))
			for i, a := range call.Arguments {
				s, ok := a.(*ast.StringNode)
				if !ok {
					walkErr = at(fmt.Errorf("%w: series: argument %d must be a string literal, so the alerter knows what to keep before it evaluates", ErrBadArg, i+1))
					return
				}
				strs = append(strs, s.Value)
			}
			sel, err := parseSelection(strs[0], strs[1:])
			if err != nil {
				walkErr = at(fmt.Errorf("%w: %v", ErrBadArg, err))
				return
			}
			if _, ok := seen[sel.key]; !ok {
				seen[sel.key] = sel
				c.sels = append(c.sels, sel)
			}
		case rangeFuncs[id.Value] != nil || id.Value == "absent_over_time":
			inner, ok := call.Arguments[0].(*ast.CallNode)
			if ok {
				innerID, _ := inner.Callee.(*ast.IdentifierNode)
				ok = innerID != nil && innerID.Value == "series"
			}
			if !ok {
				walkErr = at(fmt.Errorf("%w: %s: first argument must be series(...)", ErrBadArg, id.Value))
				return
			}
			s, ok := call.Arguments[1].(*ast.StringNode)
			if !ok {
				walkErr = at(fmt.Errorf("%w: %s: range must be a string literal like \"5m\"", ErrBadArg, id.Value))
				return
			}
			if _, err := parseRange(s.Value); err != nil {
				walkErr = at(fmt.Errorf("%w: %s: %v", ErrBadArg, id.Value, err))
			}
		}
	})
	node := prog.Node()
	ast.Walk(&node, v)
	if walkErr != nil {
		return nil, walkErr
	}
	// Ranges are known only now that every selection is: record the widest.
	ast.Walk(&node, visitor(func(n *ast.Node) {
		call, ok := (*n).(*ast.CallNode)
		if !ok {
			return
		}
		id, ok := call.Callee.(*ast.IdentifierNode)
		if !ok || (rangeFuncs[id.Value] == nil && id.Value != "absent_over_time") {
			return
		}
		inner := call.Arguments[0].(*ast.CallNode)
		strs := make([]string, 0, len(inner.Arguments))
		for _, a := range inner.Arguments {
			strs = append(strs, a.(*ast.StringNode).Value)
		}
		rng, _ := parseRange(call.Arguments[1].(*ast.StringNode).Value)
		sel := seen[selectionKey(strs[0], strs[1:])]
		sel.window = max(sel.window, rng)
	}))
	switch t := node.Type(); {
	case t == nil, t == vectorType, t.Kind() == reflect.Bool, t.Kind() == reflect.Float64, t.Kind() == reflect.Int, t.Kind() == reflect.Interface:
	default:
		return nil, &ExprError{Line: 1, Column: 1, Err: fmt.Errorf("%w: %s, want a vector, a bool or a number", ErrWrongType, t)}
	}
	return c, nil
}

type visitor func(n *ast.Node)

func (v visitor) Visit(n *ast.Node) { v(n) }

// position turns a rune offset in src into a 1-based line and column.
func position(src string, from int) (line, col int) {
	line, col = 1, 1
	for i, r := range []rune(src) {
		if i == from {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
			continue
		}
		col++
	}
	return line, col
}
