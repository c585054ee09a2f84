//go:build !linux

package main

import "time"

// receiveEpoll is receiveEach where there is no epoll.
func receiveEpoll(subs []*rawSub, base time.Time, on func(i int, msg []byte, at arrival), ended func(i int, err error)) (stop func(), err error) {
	return receiveEach(subs, base, on, ended)
}
