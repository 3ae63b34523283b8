//go:build race

package proxy

// raceEnabled reports a build with the race detector, under which sync.Pool
// drops some of what it is given: allocation counts mean nothing there.
const raceEnabled = true
