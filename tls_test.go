package main

import (
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/deltaeds/deltaeds/internal/testpki"
)

// tlsGeneration is a CA with the server and client certificates it issued.
type tlsGeneration struct {
	ca             *testpki.CA
	server, client testpki.KeyPair
}

func newTLSGeneration(t *testing.T, name string) tlsGeneration {
	t.Helper()
	ca, err := testpki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.IssueServer("deltaeds", "deltaeds.test")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient("envoy")
	if err != nil {
		t.Fatal(err)
	}
	return tlsGeneration{ca: ca, server: server, client: client}
}

// TestTLSReloadsCertKeyAndClientCA rotates all three files under a serving
// listener: afterwards a client trusting only the new CA is served (the new
// certificate and key), a client with a certificate from the new CA is
// accepted and one from the old CA refused (the new client CA). A rotation
// caught half-way keeps the previous files.
func TestTLSReloadsCertKeyAndClientCA(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	write := func(file string, b []byte) {
		t.Helper()
		if err := os.WriteFile(file, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	oldGen, newGen := newTLSGeneration(t, "old CA"), newTLSGeneration(t, "new CA")
	write(certFile, oldGen.server.CertPEM)
	write(keyFile, oldGen.server.KeyPEM)
	write(caFile, oldGen.ca.CertPEM)

	// Every handshake checks the files (the interval is zero).
	cfg, err := serverTLS(certFile, keyFile, caFile, 0, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, cfg)

	// dial completes a handshake as the client of gen, trusting the server
	// certificates of trust, and reads the server's "ok": with TLS 1.3 a
	// refused client certificate shows on that read.
	dial := func(client tlsGeneration, trust tlsGeneration) error {
		cert, err := client.client.TLS()
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: trust.ca.Pool(), Certificates: []tls.Certificate{cert}, ServerName: "deltaeds.test"})
		if err != nil {
			return err
		}
		defer conn.Close()
		buf := make([]byte, 2)
		if _, err := io.ReadFull(conn, buf); err != nil {
			return err
		}
		if string(buf) != "ok" {
			return errors.New("unexpected answer " + string(buf))
		}
		return nil
	}

	if err := dial(oldGen, oldGen); err != nil {
		t.Fatalf("before the rotation, the old client: %v", err)
	}
	if err := dial(newGen, oldGen); err == nil {
		t.Fatal("before the rotation, a client of the new CA was accepted")
	}

	// Half a rotation (a new certificate, the old key) does not load: the
	// old files keep being served.
	write(certFile, newGen.server.CertPEM)
	if err := dial(oldGen, oldGen); err != nil {
		t.Fatalf("half-way through the rotation, the old client: %v", err)
	}

	write(keyFile, newGen.server.KeyPEM)
	write(caFile, newGen.ca.CertPEM)
	if err := dial(newGen, newGen); err != nil {
		t.Errorf("after the rotation, the new client: %v", err)
	}
	if err := dial(oldGen, newGen); err == nil {
		t.Error("after the rotation, a client certificate from the old CA was accepted")
	}
	if err := dial(newGen, oldGen); err == nil {
		t.Error("after the rotation, the old server certificate is still served")
	}
}

// serveTLS accepts TLS connections with cfg until the test ends, answering
// "ok" to each that completes its handshake.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := l.Accept()
			if err != nil {
				return // closed
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				if err := conn.(*tls.Conn).Handshake(); err != nil {
					return
				}
				_, _ = conn.Write([]byte("ok"))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return l.Addr().String()
}
