package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestQueueServer(t *testing.T) {
	q := NewQueueServer("http://127.0.0.1:1")
	srv := httptest.NewServer(q.Handler())
	defer srv.Close()
	url := q.URL("i-1")
	if q.URL("i-1") != url {
		t.Fatal("URL changed between calls for one instance")
	}
	path := strings.TrimPrefix(url, "http://127.0.0.1:1")
	other := strings.TrimPrefix(q.URL("i-2"), "http://127.0.0.1:1")
	post := func(path, body string) int {
		t.Helper()
		resp, err := srv.Client().Post(srv.URL+path, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if _, ok := q.Length("i-1"); ok {
		t.Error("a length before any report")
	}
	for _, tc := range []struct {
		path, body string
		status     int
		want       int64
	}{
		{path, "42\n", http.StatusNoContent, 42},
		{path, `{"length": 7}`, http.StatusNoContent, 7},
		{path, "-1", http.StatusBadRequest, 7},
		{path, "many", http.StatusBadRequest, 7},
		{path, `{"len": 3}`, http.StatusBadRequest, 7},
		{strings.Replace(path, "i-1", "i-2", 1), "99", http.StatusNotFound, 7}, // i-1's token for i-2
		{path + "x", "99", http.StatusNotFound, 7},
		{other, "5", http.StatusNoContent, 7},
	} {
		if got := post(tc.path, tc.body); got != tc.status {
			t.Errorf("POST %s %q: status %d, want %d", tc.path, tc.body, got, tc.status)
		}
		if n, _ := q.Length("i-1"); n != tc.want {
			t.Errorf("after POST %s %q: length %d, want %d", tc.path, tc.body, n, tc.want)
		}
	}
	if n, ok := q.Length("i-2"); !ok || n != 5 {
		t.Errorf("i-2 length = %d, %v; want 5", n, ok)
	}
	q.Forget("i-1")
	if _, ok := q.Length("i-1"); ok {
		t.Error("a length after Forget")
	}
	if got := post(path, "1"); got != http.StatusNotFound {
		t.Errorf("POST after Forget: status %d, want 404", got)
	}
}
