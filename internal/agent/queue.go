package agent

import (
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/gpumarket/gpumarket/internal/market"
)

// QueueEnv is the environment variable that gives a workload the URL it
// reports its queue length to.
const QueueEnv = "GPUMARKET_QUEUE_URL"

// QueueServer is the agent-local endpoint where workloads report their
// queue length, which the agent forwards in its reports so that
// deployments can scale on it. Each instance gets its own URL with a
// random token, so one workload cannot report for another:
//
//	curl -X POST -d 42 "$GPUMARKET_QUEUE_URL"
//	curl -X POST -d '{"length": 42}' "$GPUMARKET_QUEUE_URL"
//
// It is safe for concurrent use.
type QueueServer struct {
	base string
	mu   sync.Mutex
	inst map[market.InstanceID]*queueEntry
}

type queueEntry struct {
	token  string
	length int64
	set    bool
}

// NewQueueServer returns a server whose URLs start with base, the address
// workloads reach it at (http://127.0.0.1:PORT). Serve its Handler there.
func NewQueueServer(base string) *QueueServer {
	return &QueueServer{base: strings.TrimSuffix(base, "/"), inst: map[market.InstanceID]*queueEntry{}}
}

// URL returns the URL instance id reports to, creating its token.
func (q *QueueServer) URL(id market.InstanceID) string {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.inst[id]
	if e == nil {
		e = &queueEntry{token: market.RandomToken(16)}
		q.inst[id] = e
	}
	return q.base + "/v1/queue/" + string(id) + "/" + e.token
}

// Length returns the latest length instance id reported.
func (q *QueueServer) Length(id market.InstanceID) (int64, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.inst[id]
	if e == nil || !e.set {
		return 0, false
	}
	return e.length, true
}

// Forget drops an instance's token and length.
func (q *QueueServer) Forget(id market.InstanceID) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.inst, id)
}

// Handler serves POST /v1/queue/{instance}/{token} with the length as a
// bare number or as {"length": N}.
func (q *QueueServer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/queue/{instance}/{token}", func(w http.ResponseWriter, r *http.Request) {
		id := market.InstanceID(r.PathValue("instance"))
		body, err := io.ReadAll(io.LimitReader(r.Body, 1024))
		if err != nil {
			http.Error(w, "read the body: "+err.Error(), http.StatusBadRequest)
			return
		}
		n, ok := parseLength(body)
		if !ok {
			http.Error(w, `the body must be a queue length: a whole number >= 0, or {"length": N}`, http.StatusBadRequest)
			return
		}
		q.mu.Lock()
		defer q.mu.Unlock()
		e := q.inst[id]
		if e == nil || subtle.ConstantTimeCompare([]byte(e.token), []byte(r.PathValue("token"))) != 1 {
			http.Error(w, "unknown instance or token; use the URL in $"+QueueEnv, http.StatusNotFound)
			return
		}
		e.length, e.set = n, true
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func parseLength(b []byte) (int64, bool) {
	s := strings.TrimSpace(string(b))
	if strings.HasPrefix(s, "{") {
		var v struct {
			Length *int64 `json:"length"`
		}
		if err := json.Unmarshal([]byte(s), &v); err != nil || v.Length == nil {
			return 0, false
		}
		return *v.Length, *v.Length >= 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n >= 0
}

// length is Length on a server that may be nil.
func (q *QueueServer) length(id market.InstanceID) (int64, bool) {
	if q == nil {
		return 0, false
	}
	return q.Length(id)
}
