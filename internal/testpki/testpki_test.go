package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
)

func TestIssuedCertificatesVerify(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other CA")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.IssueServer("server", "deltaeds.test")
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient("client", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(kp KeyPair) *x509.Certificate {
		t.Helper()
		c, err := kp.TLS()
		if err != nil {
			t.Fatal(err)
		}
		x, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	s, c := leaf(server), leaf(client)
	cases := []struct {
		name    string
		cert    *x509.Certificate
		roots   *x509.CertPool
		usage   x509.ExtKeyUsage
		dnsName string
		wantErr bool
	}{
		{"server for an extra name", s, ca.Pool(), x509.ExtKeyUsageServerAuth, "deltaeds.test", false},
		{"server for localhost", s, ca.Pool(), x509.ExtKeyUsageServerAuth, "localhost", false},
		{"server for a name it lacks", s, ca.Pool(), x509.ExtKeyUsageServerAuth, "example.com", true},
		{"server is no client", s, ca.Pool(), x509.ExtKeyUsageClientAuth, "", true},
		{"client", c, ca.Pool(), x509.ExtKeyUsageClientAuth, "", false},
		{"client is no server", c, ca.Pool(), x509.ExtKeyUsageServerAuth, "", true},
		{"another CA's roots", c, other.Pool(), x509.ExtKeyUsageClientAuth, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.cert.Verify(x509.VerifyOptions{Roots: tc.roots, DNSName: tc.dnsName, KeyUsages: []x509.ExtKeyUsage{tc.usage}})
			if (err != nil) != tc.wantErr {
				t.Fatalf("Verify: %v, want error %v", err, tc.wantErr)
			}
		})
	}
	if err := s.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("server for 127.0.0.1: %v", err)
	}
	if err := s.VerifyHostname(net.IPv6loopback.String()); err != nil {
		t.Errorf("server for ::1: %v", err)
	}
	if got := c.Subject.Organization; len(got) != 1 || got[0] != "system:masters" {
		t.Errorf("client organizations %v", got)
	}
	if s.SerialNumber.Cmp(c.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
	if _, err := tls.X509KeyPair(ca.CertPEM, ca.KeyPEM); err != nil {
		t.Errorf("CA PEM pair: %v", err)
	}
}

func TestWriteFiles(t *testing.T) {
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.IssueClient("client")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := kp.WriteFiles(t.TempDir(), "client")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{certFile, keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
}
