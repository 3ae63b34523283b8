//go:build race

package main

// raceEnabled reports a build with the race detector, which slows every
// goroutine handoff by an order of magnitude.
const raceEnabled = true
