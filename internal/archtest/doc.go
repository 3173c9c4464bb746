// Package archtest holds the test that enforces the import direction of
// DESIGN.md: domain in the middle, pure rules around it, adapters at the
// edge, and only cli wiring everything together. It has no code.
package archtest
