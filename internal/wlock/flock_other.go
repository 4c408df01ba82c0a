//go:build !unix

package wlock

const supported = false

func try(fd uintptr) bool   { return false }
func block(fd uintptr) bool { return false }
func unlock(fd uintptr)     {}
