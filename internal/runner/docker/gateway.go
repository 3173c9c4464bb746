package docker

import (
	"context"
	"fmt"
	"net"
	"net/netip"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
)

// HostGateway returns an address of this host that containers reach: the
// gateway of Docker's default bridge (docker0's address, 172.17.0.1 on
// most hosts). Every container of the runner sits on a bridge network of
// its own, and traffic from there to any address of the host arrives at
// the host, so a service the agent offers to its containers (the queue
// endpoint) listens here rather than on 127.0.0.1, which inside a
// container is the container itself. The daemon must run on this host.
func (r *Runner) HostGateway(ctx context.Context) (netip.Addr, error) {
	res, err := r.cli.NetworkInspect(ctx, "bridge", client.NetworkInspectOptions{})
	if err != nil {
		return netip.Addr{}, fmt.Errorf("inspect Docker's default bridge network: %s", daemonMessage(err))
	}
	return bridgeGateway(res.Network.IPAM.Config, res.Network.Options, interfaceAddrs)
}

// bridgeGateway finds the default bridge's gateway: from the network's
// IPAM configuration when the daemon lists one, else from the address of
// the bridge's interface on this host.
func bridgeGateway(cfgs []network.IPAMConfig, opts map[string]string, addrsOf func(string) ([]netip.Prefix, error)) (netip.Addr, error) {
	for _, c := range cfgs {
		if c.Gateway.Is4() {
			return c.Gateway, nil
		}
	}
	name := opts["com.docker.network.bridge.name"]
	if name == "" {
		name = "docker0"
	}
	addrs, err := addrsOf(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("the default bridge lists no gateway, and its interface %s: %w", name, err)
	}
	for _, a := range addrs {
		for _, c := range cfgs {
			if a.Addr().Is4() && c.Subnet.Contains(a.Addr()) {
				return a.Addr(), nil
			}
		}
	}
	return netip.Addr{}, fmt.Errorf("the default bridge lists no gateway, and its interface %s has no IPv4 address in its subnet", name)
}

// interfaceAddrs lists the addresses of the network interface name.
func interfaceAddrs(name string) ([]netip.Prefix, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(n.String()); err == nil {
				out = append(out, p)
			}
		}
	}
	return out, nil
}
