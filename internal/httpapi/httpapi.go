// Package httpapi serves the coordinator's JSON API (/api/v1), the agent
// API (/agent/v1), the OpenAPI description, health and metrics. It maps
// error kinds to HTTP statuses in one place.
//
// It imports coord and market; never another adapter.
package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gpumarket/gpumarket/internal/coord"
	"github.com/gpumarket/gpumarket/internal/market"
)

// statusClientClosed is recorded for requests whose client left before the
// answer (nginx's 499).
const statusClientClosed = 499

// maxBody is the largest request body accepted (agent reports carry logs).
const maxBody = 4 << 20

// Options configure the handler.
type Options struct {
	Logger   *slog.Logger
	Registry *prometheus.Registry // metrics are served from it; nil = no /metrics
	// UI serves everything outside the APIs (the web pages); nil = a 404.
	UI http.Handler
}

// Server is the HTTP face of a coord.Service.
type Server struct {
	svc     *coord.Service
	log     *slog.Logger
	mux     *http.ServeMux
	reqs    *prometheus.CounterVec
	latency *prometheus.HistogramVec
}

// New returns the handler for all of the coordinator's HTTP endpoints.
func New(svc *coord.Service, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{svc: svc, log: opts.Logger, mux: http.NewServeMux()}
	if opts.Registry != nil {
		s.reqs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gpumarket_http_requests_total", Help: "HTTP requests by route and status class."}, []string{"route", "code"})
		s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "gpumarket_http_request_seconds", Help: "HTTP request latency by route (long polls included).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"route"})
		opts.Registry.MustRegister(s.reqs, s.latency)
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{}))
	}
	for _, r := range routes {
		s.mux.Handle(r.Method+" "+r.Path, s.wrap(r))
	}
	s.mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, OpenAPI(), true)
	})
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		// Leadership: which coordinator runs the background loops.
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "leadership": s.svc.Leadership()}, true)
	})
	for _, prefix := range []string{"/api/", "/agent/"} {
		s.mux.HandleFunc(prefix, func(w http.ResponseWriter, r *http.Request) {
			writeError(w, s.log, market.Errorf("route", market.NotFound, "no API endpoint %s %s; see /api/v1/openapi.json", r.Method, r.URL.Path))
		})
	}
	if opts.UI != nil {
		s.mux.Handle("/", opts.UI)
	}
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// call is what a route's handler gets: the request, the authenticated
// account (zero for public routes) and helpers to read input.
type call struct {
	r      *http.Request
	caller market.Account
}

func (c *call) ctx() context.Context { return c.r.Context() }

// decode reads the JSON body into v, rejecting unknown fields and
// trailing data with a message that says what was wrong.
func (c *call) decode(v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, c.r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		var tooBig *http.MaxBytesError
		switch {
		case errors.Is(err, io.EOF):
			return market.Errorf("read request", market.Invalid, "the request body is empty; send a JSON object")
		case errors.Is(err, io.ErrUnexpectedEOF):
			return market.Errorf("read request", market.Invalid, "malformed JSON: the body ends before the JSON object does")
		case errors.As(err, &syn):
			return market.Errorf("read request", market.Invalid, "malformed JSON at byte %d: %v", syn.Offset, err)
		case errors.As(err, &typ):
			return market.Errorf("read request", market.Invalid, "field %q must be %s, not a JSON %s", typ.Field, typ.Type, typ.Value)
		case errors.As(err, &tooBig):
			return market.Errorf("read request", market.Invalid, "the request body is larger than %d bytes", tooBig.Limit)
		default:
			return market.Errorf("read request", market.Invalid, "bad request body: %v", err)
		}
	}
	if dec.More() {
		return market.Errorf("read request", market.Invalid, "the request body has data after the JSON object")
	}
	return nil
}

func (c *call) pathID(name string) string { return c.r.PathValue(name) }

func (c *call) queryInt(name string, def int64) (int64, error) {
	v := c.r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, market.Errorf("read query", market.Invalid, "query parameter %s=%q must be a whole number >= 0", name, v)
	}
	return n, nil
}

func (c *call) querySeconds(name string) (time.Duration, error) {
	n, err := c.queryInt(name, 0)
	return time.Duration(n) * time.Second, err
}

// wrap authenticates, runs the handler, and writes its result or error.
func (s *Server) wrap(rt route) http.Handler {
	// The route's series are looked up once here, not per request: the
	// heartbeat route alone takes thousands of requests a second.
	// A status class's series is made on first use, so /metrics lists only
	// the classes a route has answered with.
	name := rt.Method + " " + rt.Path
	var counts [6]struct { // by status class, 1xx..5xx; 0 for none written
		once sync.Once
		c    prometheus.Counter
	}
	// An agent's calls are answered in compact JSON: a program reads
	// them, thousands a second (the indentation cost the coordinator
	// about 3% of its CPU in a dispatch); people's calls, indented.
	indent := !strings.HasPrefix(rt.Path, "/agent/")
	var latency prometheus.Observer
	if s.reqs != nil {
		latency = s.latency.WithLabelValues(name)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if latency != nil {
				if class := sw.code / 100; class >= 0 && class < len(counts) {
					n := &counts[class]
					n.once.Do(func() { n.c = s.reqs.WithLabelValues(name, strconv.Itoa(class)+"xx") })
					n.c.Inc()
				}
				latency.Observe(time.Since(start).Seconds())
			}
		}()
		c := &call{r: r}
		if rt.Auth {
			a, err := s.authenticate(r)
			if err != nil {
				writeError(sw, s.log, err)
				return
			}
			c.caller = a
		}
		v, err := rt.Handle(s, c)
		if err != nil && r.Context().Err() != nil {
			// The client went away (a long poll cut short, an agent
			// shutting down): nobody reads an answer, and it is no fault.
			sw.WriteHeader(statusClientClosed)
			return
		}
		if err != nil {
			writeError(sw, s.log, err)
			return
		}
		code := rt.Status
		if code == 0 {
			code = http.StatusOK
		}
		if code == http.StatusNoContent {
			sw.WriteHeader(code)
			return
		}
		writeJSON(sw, code, v, indent)
	})
}

func (s *Server) authenticate(r *http.Request) (market.Account, error) {
	h := r.Header.Get("Authorization")
	secret, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || secret == "" {
		return market.Account{}, market.Errorf("authenticate", market.Unauthorized, "missing API key: send `Authorization: Bearer <key>` (run `gpumarket login` for the CLI)")
	}
	return s.svc.Authenticate(r.Context(), strings.TrimSpace(secret))
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func writeJSON(w http.ResponseWriter, code int, v any, indent bool) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && !rv.IsNil() && rv.Len() > streamFrom {
		_ = writeJSONArray(w, rv, indent) // the client went away; nothing to do
		return
	}
	enc := json.NewEncoder(w)
	if indent {
		enc.SetIndent("", "  ")
	}
	_ = enc.Encode(v) // the client went away; nothing to do
}

// streamFrom is the length above which writeJSON writes a list an element
// at a time: encoding/json builds the whole body in memory before writing
// it, and the 100,000 machines of one host, listed at once, took 600 MiB of
// the coordinator's memory for that alone.
const streamFrom = 64

// writeJSONArray writes the list rv as JSON, byte for byte as
// json.Encoder would (indented as with SetIndent("", "  ") when indent),
// holding one element's encoding at a time.
func writeJSONArray(w io.Writer, rv reflect.Value, indent bool) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	sep, open, end := []byte(","), []byte("["), []byte("]\n")
	if indent {
		sep, open, end = []byte(",\n  "), []byte("[\n  "), []byte("\n]\n")
	}
	bw.Write(open)
	for i := range rv.Len() {
		if i > 0 {
			bw.Write(sep)
		}
		var b []byte
		var err error
		if indent {
			b, err = json.MarshalIndent(rv.Index(i).Interface(), "  ", "  ")
		} else {
			b, err = json.Marshal(rv.Index(i).Interface())
		}
		if err != nil {
			return err
		}
		if _, err := bw.Write(b); err != nil {
			return err
		}
	}
	bw.Write(end)
	return bw.Flush()
}

// Status is the HTTP status for an error kind: the one place that maps them.
func Status(k market.Kind) int {
	switch k {
	case market.NotFound:
		return http.StatusNotFound
	case market.Invalid:
		return http.StatusBadRequest
	case market.Conflict:
		return http.StatusConflict
	case market.Unauthorized:
		return http.StatusUnauthorized
	case market.Forbidden:
		return http.StatusForbidden
	case market.InsufficientFunds:
		return http.StatusPaymentRequired
	case market.Unavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	k := market.KindOf(err)
	var body ErrorBody
	body.Error.Code = k.String()
	body.Error.Message = market.Message(err)
	if k == market.Internal || k == market.KindOther {
		log.Error("internal error", "err", err)
		body.Error.Code = market.Internal.String()
		body.Error.Message = "internal error; the operator's log has the details"
	}
	if k == market.Unauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gpumarket"`)
	}
	writeJSON(w, Status(k), body, true)
}

func parseMoneyQuery(c *call, name string) (market.Money, error) {
	v := c.r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	m, err := market.ParseMoney(v)
	if err != nil {
		return 0, market.Errorf("read query", market.Invalid, "%s: %w", name, err)
	}
	return m, nil
}

func errorf(format string, args ...any) error {
	return market.Errorf("read request", market.Invalid, format, args...)
}
