//go:build race

package coord_test

// raceEnabled is true when the tests run with the race detector, which makes
// the simulation about twenty times slower; it then runs fewer seeds.
const raceEnabled = true
