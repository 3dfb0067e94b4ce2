package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/deltaeds/deltaeds/internal/testpki"
)

// pki is the throwaway trust of one control plane. A single CA signs the apiserver's serving
// certificate and the client certificates, and is both the clients' root and --client-ca-file.
type pki struct {
	ca      *testpki.CA
	serving testpki.KeyPair
	// admin is in system:masters: every request is allowed, RBAC or not.
	admin testpki.KeyPair
	// controllerManager is system:kube-controller-manager, also in system:masters: without
	// --use-service-account-credentials all its controllers act as itself.
	controllerManager testpki.KeyPair
	// saKeyPEM and saPubPEM sign and verify service-account tokens.
	saKeyPEM []byte
	saPubPEM []byte
}

func newPKI() (*pki, error) {
	ca, err := testpki.NewCA("deltaeds-test-ca")
	if err != nil {
		return nil, err
	}
	p := &pki{ca: ca}
	if p.serving, err = ca.Issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.IPv4(10, 0, 0, 1)},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	}); err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	if p.admin, err = ca.IssueClient("deltaeds-test-admin", "system:masters"); err != nil {
		return nil, fmt.Errorf("admin client certificate: %w", err)
	}
	if p.controllerManager, err = ca.IssueClient("system:kube-controller-manager", "system:masters"); err != nil {
		return nil, fmt.Errorf("controller-manager client certificate: %w", err)
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating service-account key: %w", err)
	}
	if p.saKeyPEM, err = testpki.EncodeKey(saKey); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return nil, fmt.Errorf("encoding service-account public key: %w", err)
	}
	p.saPubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	return p, nil
}

// writeFiles writes the files kube-apiserver reads into dir and returns their paths.
func (p *pki) writeFiles(dir string) (pkiFiles, error) {
	f := pkiFiles{
		caCert:      filepath.Join(dir, "ca.crt"),
		servingCert: filepath.Join(dir, "apiserver.crt"),
		servingKey:  filepath.Join(dir, "apiserver.key"),
		saKey:       filepath.Join(dir, "sa.key"),
		saPub:       filepath.Join(dir, "sa.pub"),
	}
	for path, data := range map[string][]byte{
		f.caCert:      p.ca.CertPEM,
		f.servingCert: p.serving.CertPEM,
		f.servingKey:  p.serving.KeyPEM,
		f.saKey:       p.saKeyPEM,
		f.saPub:       p.saPubPEM,
	} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return pkiFiles{}, fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return f, nil
}

type pkiFiles struct {
	caCert, servingCert, servingKey, saKey, saPub string
}

// kubeconfig renders a self-contained kubeconfig (certificates inline) for one client identity.
func kubeconfig(server string, caPEM []byte, user string, client testpki.KeyPair) []byte {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: deltaeds-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: deltaeds-test
  context:
    cluster: deltaeds-test
    user: %s
current-context: deltaeds-test
`, server, b64(caPEM), user, b64(client.CertPEM), b64(client.KeyPEM), user)
}
