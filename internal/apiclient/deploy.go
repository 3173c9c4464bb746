package apiclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/gpumarket/gpumarket/internal/market"
)

// Deployments and pools. A deployment is named by its ID or by the name of
// one of the caller's deployments.

// CreateDeployment creates a deployment.
func (c *Client) CreateDeployment(ctx context.Context, spec market.DeploymentSpec) (market.Deployment, error) {
	var out market.Deployment
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/deployments", body: spec, out: &out})
	return out, err
}

// ApplyDeployment creates the caller's deployment of the spec's name, or
// updates it.
func (c *Client) ApplyDeployment(ctx context.Context, spec market.DeploymentSpec) (market.ApplyResult, error) {
	var out market.ApplyResult
	err := c.do(ctx, call{method: http.MethodPut, path: "/api/v1/deployments", body: spec, out: &out})
	return out, err
}

// Deployments lists the caller's deployments (every one, for an admin
// asking for all).
func (c *Client) Deployments(ctx context.Context, all bool) ([]market.Deployment, error) {
	v := url.Values{}
	if all {
		v.Set("all", "1")
	}
	out := []market.Deployment{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/deployments", query: v, out: &out})
	return nonNil(out), err
}

// Deployment returns a deployment with its replicas and recent decisions.
func (c *Client) Deployment(ctx context.Context, ref string) (market.DeploymentView, error) {
	var out market.DeploymentView
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/deployments/" + esc(ref), out: &out})
	return out, err
}

// UpdateDeployment replaces a deployment's spec.
func (c *Client) UpdateDeployment(ctx context.Context, ref string, spec market.DeploymentSpec) (market.Deployment, error) {
	var out market.Deployment
	err := c.do(ctx, call{method: http.MethodPut, path: "/api/v1/deployments/" + esc(ref), body: spec, out: &out})
	return out, err
}

// ScaleDeployment changes a deployment's replica bounds or count.
func (c *Client) ScaleDeployment(ctx context.Context, ref string, req market.ScaleRequest) (market.Deployment, error) {
	var out market.Deployment
	err := c.do(ctx, call{method: http.MethodPost, path: "/api/v1/deployments/" + esc(ref) + "/scale", body: req, out: &out})
	return out, err
}

// DeleteDeployment deletes a deployment; its replicas stop.
func (c *Client) DeleteDeployment(ctx context.Context, ref string) (market.Deployment, error) {
	var out market.Deployment
	err := c.do(ctx, call{method: http.MethodDelete, path: "/api/v1/deployments/" + esc(ref), out: &out})
	return out, err
}

// Pools lists the capacity pools with their quota and use (admins).
func (c *Client) Pools(ctx context.Context) ([]market.PoolUsage, error) {
	out := []market.PoolUsage{}
	err := c.do(ctx, call{method: http.MethodGet, path: "/api/v1/admin/pools", out: &out})
	return nonNil(out), err
}

// PutPool creates or changes a pool (admins).
func (c *Client) PutPool(ctx context.Context, p market.Pool) (market.Pool, error) {
	var out market.Pool
	err := c.do(ctx, call{method: http.MethodPut, path: "/api/v1/admin/pools/" + esc(p.Name), body: p, out: &out})
	return out, err
}

// DeletePool deletes a pool no machine is assigned to (admins).
func (c *Client) DeletePool(ctx context.Context, name string) error {
	return c.do(ctx, call{method: http.MethodDelete, path: "/api/v1/admin/pools/" + esc(name)})
}

// AssignPool assigns machines to a pool, or takes them out of pools with
// pool "" (admins).
func (c *Client) AssignPool(ctx context.Context, pool string, machines []market.MachineID) error {
	return c.do(ctx, call{method: http.MethodPost, path: "/api/v1/admin/pools/assign", body: market.PoolAssignment{Pool: pool, Machines: machines}})
}
