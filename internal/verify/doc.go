// Package verify holds the rules of machine verification: the table of
// known GPU models and the spec checks against it, the nonce-bound compute
// challenge (task derivation, the reference CPU solver, Merkle commitment,
// spot-check proofs and their verification, timing against a model's
// envelope) and the published reliability formula.
//
// It is pure: it imports only internal/market, takes the time as input and
// does no I/O.
package verify
