//go:build race

package portals

const raceEnabled = true
