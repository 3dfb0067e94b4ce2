package harness

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"google.golang.org/grpc/credentials"

	"github.com/deltaeds/deltaeds/internal/testpki"
)

// ClientCreds returns gRPC credentials that trust roots and present client, if not nil. The
// certificate is presented whatever CAs the server says it accepts, as Envoy does, so a server
// must itself reject a certificate from another CA.
func ClientCreds(roots []byte, client *testpki.KeyPair) (credentials.TransportCredentials, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		return nil, fmt.Errorf("harness: no certificate in the roots PEM")
	}
	cfg := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if client != nil {
		cert, err := client.TLS()
		if err != nil {
			return nil, fmt.Errorf("harness: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return credentials.NewTLS(cfg), nil
}
