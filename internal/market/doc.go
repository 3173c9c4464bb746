// Package market holds gpumarket's domain types: typed IDs, Money, accounts,
// machines, instances, ledger transfers, the agent protocol messages and the
// one error type used across the code base.
//
// It imports nothing of gpumarket's own; every other package may import it.
package market
