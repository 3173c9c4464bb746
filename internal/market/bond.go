package market

// Bonds: tokens a host stakes on a machine's GPUs. A bond ranks the
// machine higher in offer search, and part of it is paid to the affected
// renters when a check fails or the machine goes down during their
// rentals (docs/verification.md, "Penalties").

// MachineBond holds the bond of one machine, in its host's name.
func MachineBond(host AccountID, m MachineID) LedgerAccount {
	return LedgerAccount("host:" + string(host) + ":bond-" + string(m))
}

// Bond transfer kinds.
const (
	TransferBond   TransferKind = "bond"   // host available -> machine bond
	TransferUnbond TransferKind = "unbond" // machine bond -> host available
	TransferSlash  TransferKind = "slash"  // machine bond -> affected renters' available
)

// BondRequest sets a machine's bond per GPU; the difference to the bond
// held moves from or to the host's available balance.
type BondRequest struct {
	PerGPU Money `json:"per_gpu"`
}

// Bond is a machine's bond as it stands.
type Bond struct {
	Machine MachineID `json:"machine"`
	Total   Money     `json:"total"`   // held in the bond account
	PerGPU  Money     `json:"per_gpu"` // Total / GPUs
	Slashed Money     `json:"slashed"` // paid to renters so far
}
