package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// httpServer is the lifecycle the control socket and the metrics listener
// share: the caller listens first, so that a socket or port that cannot be
// had fails the mount before anything is mounted; serve starts answering
// once the mount is up; close stops, waiting for requests in progress.
type httpServer struct {
	// Set once in newHTTPServer.
	what   string // names the server in the log
	log    *slog.Logger
	ln     net.Listener
	srv    *http.Server
	served chan struct{} // closed when Serve returns

	started bool // serve was called; set before close, by the same goroutine
}

// newHTTPServer makes a server of h on ln that does not serve yet.
// net/http's own complaints (a malformed request, an accept error) go to
// log as warnings.
func newHTTPServer(what string, ln net.Listener, h http.Handler, log *slog.Logger) *httpServer {
	return &httpServer{what: what, log: log, ln: ln, served: make(chan struct{}),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
}

// serve starts answering requests, in a goroutine that close waits for.
func (s *httpServer) serve() {
	s.started = true
	go func() {
		defer close(s.served)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error(s.what, "err", err)
		}
	}()
}

// close stops listening and waits, within ctx, for requests in progress;
// when ctx ends first, it cuts the slow ones off. A server that never
// served only closes its listener.
func (s *httpServer) close(ctx context.Context) error {
	if !s.started {
		return s.ln.Close()
	}
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	<-s.served
	return err
}
