//go:build !linux

package thinstream

import "errors"

func get(int) (int, error) { return 0, errors.New("thinstream: only on Linux") }
