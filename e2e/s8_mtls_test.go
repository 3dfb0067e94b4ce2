package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/deltaeds/deltaeds/e2e/harness"
	"github.com/deltaeds/deltaeds/envoysim"
	"github.com/deltaeds/deltaeds/internal/envoyfleet"
	"github.com/deltaeds/deltaeds/internal/testpki"
	"github.com/deltaeds/deltaeds/translate"
)

// Scenario 8: mTLS on. A client without a valid certificate is refused (no certificate, one
// from another CA, plaintext); with one it is served.
func TestMutualTLS(t *testing.T) {
	const ns = "s8-mtls"
	e := scenario(t, ns)
	d := e.service(t, ns, "vault", 3)
	name := translate.ClusterName(ns, "vault", "http")

	// A CA for deltaeds and its Envoys, and an impostor CA.
	ca, err := testpki.NewCA("deltaeds-e2e-ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.IssueServer("deltaeds")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient("envoy")
	if err != nil {
		t.Fatal(err)
	}
	rogueCA, err := testpki.NewCA("rogue-ca")
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := rogueCA.IssueClient("envoy")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	// write replaces a file atomically, as a Secret volume or cert-manager does.
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p := e.deltaeds(t, harness.DeltaedsOptions{
		Name:            "deltaeds-s8",
		TLSCertFile:     write("server.crt", server.CertPEM),
		TLSKeyFile:      write("server.key", server.KeyPEM),
		TLSClientCAFile: write("ca.crt", ca.CertPEM),
	})

	creds := func(roots []byte, kp *testpki.KeyPair) credentials.TransportCredentials {
		c, err := harness.ClientCreds(roots, kp)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	f := e.fleet(t, envoyfleet.Options{Size: 2, Target: p.XDSAddress(), Creds: creds(ca.CertPEM, &client), NodePrefix: "s8"})
	f.Subscribe(name)
	waitAll(t, "the Service over mTLS", f, holds(name, d.IPs(), nil))

	for _, tc := range []struct {
		what  string
		creds credentials.TransportCredentials
	}{
		{"no client certificate", creds(ca.CertPEM, nil)},
		{"a certificate from another CA", creds(ca.CertPEM, &rogue)},
		{"plaintext", insecure.NewCredentials()},
	} {
		t.Run(tc.what, func(t *testing.T) {
			err := tryStream(t, p.XDSAddress(), tc.creds, name)
			if err == nil {
				t.Fatal("served")
			}
			if code := status.Code(err); code != codes.Unavailable {
				t.Errorf("refused with %v, want Unavailable: %v", code, err)
			}
			t.Logf("refused: %v", err)
		})
	}
	t.Run("a valid certificate, on a fresh connection", func(t *testing.T) {
		if err := tryStream(t, p.XDSAddress(), creds(ca.CertPEM, &client), name); err != nil {
			t.Fatalf("refused: %v", err)
		}
	})

	// The refused clients opened no stream, and the fleet was not disturbed. (The valid probe's
	// stream ends when its connection closes, which deltaeds notices a moment later.)
	waitMetric(t, p, "deltaeds_xds_streams", nil, func(v float64) bool { return v == float64(len(f.Clients)) })
	for i, c := range f.Clients {
		if s := c.Stats(); s.Reconnects != 0 {
			t.Errorf("client %d reconnected %d times", i, s.Reconnects)
		}
	}
	// And the fleet still follows changes.
	pods := d.Pods()
	if err := d.SetReady(t.Context(), pods[0], false); err != nil {
		t.Fatal(err)
	}
	waitAll(t, "a change over mTLS", f, holds(name, []string{pods[1].IP, pods[2].IP}, nil))

	// The serving certificate is rotated on disk: new connections get the new one (deltaeds
	// checks the files at most every 10 s), existing streams carry on.
	rotated, err := ca.IssueServer("deltaeds-rotated")
	if err != nil {
		t.Fatal(err)
	}
	write("server.crt", rotated.CertPEM)
	write("server.key", rotated.KeyPEM)
	want, err := parseCert(rotated.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := tls.X509KeyPair(client.CertPEM, client.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	var served *x509.Certificate
	if err := harness.Eventually(waitCtx(t), func() error {
		c, err := tls.Dial("tcp", p.XDSAddress(), &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12})
		if err != nil {
			return err
		}
		defer c.Close()
		served = c.ConnectionState().PeerCertificates[0]
		if served.SerialNumber.Cmp(want.SerialNumber) != 0 {
			return fmt.Errorf("still serving %s (serial %s)", served.Subject.CommonName, served.SerialNumber)
		}
		return nil
	}); err != nil {
		t.Fatalf("the rotated certificate was not picked up: %v", err)
	}
	if err := tryStream(t, p.XDSAddress(), creds(ca.CertPEM, &client), name); err != nil {
		t.Fatalf("a new client after the rotation: %v", err)
	}
	pods = d.Pods()
	if err := d.SetReady(t.Context(), pods[1], false); err != nil {
		t.Fatal(err)
	}
	waitAll(t, "a change after the rotation, on the old streams", f, holds(name, []string{pods[2].IP}, nil))
	for i, c := range f.Clients {
		if s := c.Stats(); s.Reconnects != 0 {
			t.Errorf("client %d reconnected %d times across the rotation", i, s.Reconnects)
		}
	}
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}

// tryStream opens a Delta ADS stream with creds, subscribes to name and waits for one response.
// It returns the error that ended the attempt, or nil if a response carrying name came.
func tryStream(t *testing.T, addr string, creds credentials.TransportCredentials, name string) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node:                   &corev3.Node{Id: "s8-probe"},
		TypeUrl:                envoysim.TypeURLClusterLoadAssignment,
		ResourceNamesSubscribe: []string{name},
	}); err != nil {
		_, err = s.Recv() // the stream's status says why
		return err
	}
	resp, err := s.Recv()
	if err != nil {
		return err
	}
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != name {
		t.Errorf("first response %v, want %s", resp, name)
	}
	return nil
}
