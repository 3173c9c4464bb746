package cli

import (
	"context"
	"strings"

	"github.com/gpumarket/gpumarket/internal/apiclient"
	"github.com/gpumarket/gpumarket/internal/market"
)

// The templates themselves live in internal/market (market.Templates), so
// that the coordinator applies the same table for the API and web UI.

type instanceTemplatesCmd struct{}

func (c *instanceTemplatesCmd) Help() string {
	return `A template sets the image, the ports to publish and the start command of a
container instance for a common case; --image, --port and a command given to
'instance create' replace the template's. Templates that log in with SSH need
at least one --ssh-key: the agent puts the keys read-only at
/etc/gpumarket/authorized_keys, which the template's sshd reads, and
'instance show' prints the ssh command.

Examples:
  gpumarket instance templates
  gpumarket instance create m-0a1b2c3d4e5f --gpus 1 --template ssh --ssh-key ~/.ssh/id_ed25519.pub`
}

func (c *instanceTemplatesCmd) Run(_ context.Context, env *Env, _ *apiclient.Client) error {
	ts := market.Templates()
	if env.JSON() {
		return env.printJSON(ts)
	}
	t := newTable(env.Stdout, "NAME", "IMAGE", "PORTS", "SSH", "DESCRIPTION")
	for _, x := range ts {
		ssh := "no"
		if x.SSH {
			ssh = "yes"
		}
		t.row(x.Name, x.Image, strings.Join(x.Ports, ","), ssh, x.Description)
	}
	return t.flush()
}
