package docker

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/network"
)

func TestBridgeGateway(t *testing.T) {
	subnet := []network.IPAMConfig{{Subnet: netip.MustParsePrefix("172.17.0.0/16")}}
	docker0 := func(name string) ([]netip.Prefix, error) {
		if name != "docker0" {
			return nil, errors.New("no such network interface")
		}
		return []netip.Prefix{netip.MustParsePrefix("fe80::1/64"), netip.MustParsePrefix("172.17.0.1/16")}, nil
	}
	for _, tc := range []struct {
		name string
		cfgs []network.IPAMConfig
		opts map[string]string
		want string // address, or "error: " and part of the message
	}{
		{"listed", []network.IPAMConfig{{Subnet: netip.MustParsePrefix("10.9.0.0/16"), Gateway: netip.MustParseAddr("10.9.0.1")}}, nil, "10.9.0.1"},
		{"from the interface", subnet, nil, "172.17.0.1"},
		{"interface named", subnet, map[string]string{"com.docker.network.bridge.name": "br-x"}, "error: its interface br-x: no such network interface"},
		{"not in the subnet", []network.IPAMConfig{{Subnet: netip.MustParsePrefix("10.0.0.0/8")}}, nil, "error: has no IPv4 address in its subnet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bridgeGateway(tc.cfgs, tc.opts, docker0)
			if want, ok := strings.CutPrefix(tc.want, "error: "); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("got %v, %v; want an error saying %q", got, err, want)
				}
				return
			}
			if err != nil || got.String() != tc.want {
				t.Errorf("got %v, %v; want %s", got, err, tc.want)
			}
		})
	}
}

// A container on its own network reaches a service on the host gateway.
func TestHostGatewayReachableFromAContainer(t *testing.T) {
	r := newRunner(t, Options{})
	ctx := context.Background()
	gw, err := r.HostGateway(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(gw, 0).String())
	if err != nil {
		t.Fatalf("listen on the host gateway %s: %v", gw, err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	a := assignment("i-dialer", "-dial", ln.Addr().String())
	a.GPUs, a.GPUUUIDs = nil, nil
	if err := r.Start(ctx, a); err != nil {
		t.Fatal(err)
	}
	out := logs{}.until(t, r, "i-dialer", "stdout", "dial ")
	if !strings.Contains(out, ": ok") {
		t.Errorf("a container could not reach %s on the host gateway: %s", ln.Addr(), out)
	}
}
