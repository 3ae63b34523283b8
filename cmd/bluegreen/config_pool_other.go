//go:build !unix

package main

// nofileLimit is unknown here: the pool gets the smallest default size.
func nofileLimit() uint64 { return 0 }
