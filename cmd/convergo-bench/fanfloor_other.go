//go:build !linux

package main

import "errors"

func init() {
	commands["fanfloor"] = func([]string) error { return errors.New("fanfloor: Linux only (epoll, receive timestamps)") }
}
