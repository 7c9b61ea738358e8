package registry

import (
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/outpost-mesh/outpost/images/store"
	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running. A
// server connection that closes after a request body it did not read
// (an upload over the limit) lingers 500 ms in closeWriteAndWait, longer
// than goleak retries: it ends by itself and is not a leak.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

// testToken is the API token the push tests authenticate with.
const testToken = "s3cret-token"

// tokenAuth is an Authorize callback that accepts testToken, refuses
// "read-only" with ErrDenied, and asks for credentials otherwise.
func tokenAuth(r *http.Request) error {
	tok, ok := Token(r)
	switch {
	case !ok:
		return ErrUnauthorized
	case tok == "read-only":
		return ErrDenied
	case tok != testToken:
		return errors.New("unknown token")
	}
	return nil
}

// openStore opens a store in a temp dir over a small on-disk Badger (an
// in-memory one cannot hold a 4 MiB manifest).
func openStore(t testing.TB) *store.Store {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(t.TempDir()).WithLogger(nil).
		WithMemTableSize(8 << 20).WithValueThreshold(64 << 10).WithValueLogFileSize(32 << 20).
		WithBlockCacheSize(1 << 20).WithIndexCacheSize(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	cfg := store.DefaultConfig()
	cfg.Dir = t.TempDir()
	st, err := store.New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		st.Close()
		db.Close()
	})
	return st
}

// server is a handler served on 127.0.0.1 by a real HTTP server.
type server struct {
	*Handler
	Store *store.Store
	Addr  string // host:port
	URL   string // http://host:port
}

// newServer starts a handler over a fresh store; mod adjusts the config
// (Store is set already).
func newServer(t testing.TB, mod func(*Config)) *server {
	t.Helper()
	st := openStore(t)
	return newServerOn(t, st, mod)
}

func newServerOn(t testing.TB, st *store.Store, mod func(*Config)) *server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Store = st
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(cfg, NewStoreSource(st))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
		h.Close()
	})
	addr := ln.Addr().String()
	return &server{Handler: h, Store: st, Addr: addr, URL: "http://" + addr}
}

// eventually polls cond until it holds or a few seconds pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
