// Package apiclient is the typed Go client of the coordinator's HTTP APIs:
// the user API under /api/v1 (used by the CLI) and the agent API under
// /agent/v1 (used by the agent).
//
// It imports only market and the standard library; it must not import the
// coordinator, the HTTP server or any store, so that clients stay thin.
package apiclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gpumarket/gpumarket/internal/market"
)

// DefaultTimeout bounds ordinary requests. Long polls get their wait on top.
const DefaultTimeout = 60 * time.Second

// maxErrorBody caps how much of an error response is read.
const maxErrorBody = 1 << 20

// Client calls a coordinator with one credential. It is safe for
// concurrent use. Given several coordinator URLs (replicas on one
// database), it sticks to the one that last answered and fails over to the
// next when a request cannot reach it.
type Client struct {
	base    string   // as given, for messages
	bases   []string // the replicas
	current *atomic.Int32
	token   string
	hc      *http.Client
	timeout time.Duration
}

// New returns a client of the coordinator at baseURL ("http://127.0.0.1:8080",
// or several replicas separated by commas) that authenticates with token, if
// not empty. A nil hc gets a client with
// connect and TLS timeouts but no overall timeout: each request gets its own
// deadline through its context, so long polls are not cut short.
// WithHTTPClient returns a copy of c that sends its requests through hc:
// the same coordinators and credentials over another connection pool.
func (c *Client) WithHTTPClient(hc *http.Client) *Client {
	d := *c
	d.hc = hc
	return &d
}

func New(baseURL string, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   8,
			ExpectContinueTimeout: time.Second,
		}}
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), current: new(atomic.Int32), token: token, hc: hc, timeout: DefaultTimeout}
	for _, b := range strings.Split(baseURL, ",") {
		if b = strings.TrimRight(strings.TrimSpace(b), "/"); b != "" {
			c.bases = append(c.bases, b)
		}
	}
	if len(c.bases) == 0 {
		c.bases = []string{c.base}
	}
	return c
}

// BaseURL returns the coordinator URL the client talks to.
func (c *Client) BaseURL() string { return c.base }

// WithToken returns a copy of c that authenticates with token.
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// call describes one request.
type call struct {
	method string
	path   string // already escaped
	query  url.Values
	header http.Header
	body   any           // JSON-encoded when not nil
	out    any           // JSON-decoded from a 2xx response when not nil
	wait   time.Duration // long-poll wait, added to the request's deadline
}

// do sends r to the current replica and, when it cannot be reached, to the
// others in turn. A request that may have reached a replica (the
// connection broke after sending) is retried elsewhere only if it is a GET
// or carries an Idempotency-Key, so that a create is never made twice.
func (c *Client) do(ctx context.Context, r call) error {
	start := int(c.current.Load())
	var err error
	for i := range c.bases {
		k := (start + i) % len(c.bases)
		err = c.doOne(ctx, c.bases[k], r)
		var te *transportError
		// A call with an Idempotency-Key has one effect however often it
		// is sent, so it may be retried like a GET.
		retryable := r.method == http.MethodGet || r.header.Get("Idempotency-Key") != ""
		if !errors.As(err, &te) || ctx.Err() != nil || (!te.dial && !retryable) {
			if i > 0 && err == nil {
				c.current.Store(int32(k))
			}
			return err
		}
	}
	return err
}

func (c *Client) doOne(ctx context.Context, base string, r call) error {
	u := base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+r.wait)
	defer cancel()

	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return fmt.Errorf("%s %s: encode request: %w", r.method, u, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return &market.Error{Op: r.method + " " + u, Kind: market.Invalid,
			Err: fmt.Errorf("bad coordinator URL %q; use a URL like http://127.0.0.1:8080: %w", base, err)}
	}
	for k, vs := range r.header {
		for _, v := range vs {
			req.Header.Add(k, v)
		}
	}
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}

	resp, err := c.hc.Do(req)
	if err != nil {
		if ctxErr := context.Cause(ctx); ctxErr != nil && !errors.Is(ctxErr, context.DeadlineExceeded) {
			// Cancelled by the caller: say so plainly so callers can stop quietly.
			return fmt.Errorf("%s %s: %w", r.method, u, ctxErr)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // it would repeat the method and URL
		}
		var oe *net.OpError
		dial := errors.As(err, &oe) && oe.Op == "dial"
		return &market.Error{Op: r.method + " " + u, Kind: market.Unavailable,
			Err: &transportError{base: base, err: err, dial: dial}}
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp)
	}
	if r.out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(r.out); err != nil {
		if ctxErr := context.Cause(ctx); ctxErr != nil {
			return fmt.Errorf("%s %s: read response: %w", r.method, u, ctxErr)
		}
		return &market.Error{Op: r.method + " " + u, Kind: market.Internal,
			Err: fmt.Errorf("cannot decode the coordinator's response (is %s a gpumarket coordinator of a matching version?): %w", base, err)}
	}
	return nil
}

// transportError is a request that got no HTTP response.
type transportError struct {
	base string
	err  error
	dial bool // no connection was made: the request surely did not arrive
}

func (e *transportError) Error() string {
	return fmt.Sprintf("%v; check that the coordinator runs at %s (start one with 'gpumarket dev' or 'gpumarket serve', or pass --coordinator)", e.err, e.base)
}

func (e *transportError) Unwrap() error { return e.err }

// errorBody is the JSON error shape of both APIs.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// decodeError turns a non-2xx response into a *market.Error carrying the
// server's kind and message. The message is the whole text so that the CLI
// can print it as is.
func decodeError(resp *http.Response) error {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var eb errorBody
	kind := market.KindOther
	msg := ""
	if json.Unmarshal(raw, &eb) == nil {
		kind = market.KindFromString(eb.Error.Code)
		msg = eb.Error.Message
	}
	if kind == market.KindOther {
		kind = kindFromStatus(resp.StatusCode)
	}
	if msg == "" {
		msg = strings.TrimSpace(string(raw))
		if len(msg) > 200 || strings.ContainsAny(msg, "\n<") || msg == "" {
			msg = fmt.Sprintf("coordinator answered %s", resp.Status)
		}
	}
	return &market.Error{Kind: kind, Err: errors.New(msg)}
}

func kindFromStatus(status int) market.Kind {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity, http.StatusRequestEntityTooLarge:
		return market.Invalid
	case http.StatusUnauthorized:
		return market.Unauthorized
	case http.StatusPaymentRequired:
		return market.InsufficientFunds
	case http.StatusForbidden:
		return market.Forbidden
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return market.NotFound
	case http.StatusConflict, http.StatusPreconditionFailed:
		return market.Conflict
	case http.StatusServiceUnavailable, http.StatusTooManyRequests, http.StatusBadGateway, http.StatusGatewayTimeout:
		return market.Unavailable
	}
	return market.Internal
}

// waitSeconds turns a long-poll wait into the whole seconds the API takes,
// rounding up so that a short positive wait still waits.
func waitSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

func esc(s string) string { return url.PathEscape(s) }
