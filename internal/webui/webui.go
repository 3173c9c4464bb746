// Package webui serves the coordinator's web pages: server-rendered HTML
// from embedded templates, no JavaScript from elsewhere.
//
// It imports market only; the data it shows is passed in.
package webui

import (
	"embed"
	"html/template"
	"log/slog"
	"net/http"
)

//go:embed templates/*.html
var files embed.FS

var pages = template.Must(template.ParseFS(files, "templates/*.html"))

// Info is what the home page says about the running coordinator.
type Info struct {
	Version string
	Mode    string // "serve" or "dev"
	Stats   func() Stats
}

// Stats are live counts shown on the home page.
type Stats struct {
	Machines, OnlineMachines, RunningInstances int
}

// Handler serves the pages.
func Handler(info Info, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		data := struct {
			Info
			Stats Stats
		}{Info: info}
		if info.Stats != nil {
			data.Stats = info.Stats()
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := pages.ExecuteTemplate(w, "home.html", data); err != nil {
			log.Error("render home page", "err", err)
		}
	})
	return mux
}
