// Package config loads Weir's YAML configuration strictly: an unknown key,
// a bad duration, size or URL is an error that names the file, the line and
// the key. It also holds the value types the stage configurations share.
package config
