//go:build !unix

package storage

const flockSupported = false

func tryFlock(fd uintptr) bool { return false }
