//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package cli

import (
	"errors"
	"os"
)

// isTerminal is false where we cannot turn echo off: the password is then
// read as a line of standard input, or given with --password.
func isTerminal(*os.File) bool { return false }

func readNoEcho(*os.File) (string, error) {
	return "", errors.New("reading a password without echo is not supported here; pass --password")
}
