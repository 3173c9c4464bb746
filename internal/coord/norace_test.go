//go:build !race

package coord_test

// raceEnabled is true when the tests run with the race detector.
const raceEnabled = false
