package envoysim

import (
	"crypto/tls"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/deltaeds/deltaeds/internal/testpki"
)

func TestMutualTLS(t *testing.T) {
	ca, err := testpki.NewCA("envoysim test CA")
	if err != nil {
		t.Fatal(err)
	}
	// cert takes what ca just signed as a tls.Certificate.
	cert := func(kp testpki.KeyPair, err error) tls.Certificate {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		c, err := kp.TLS()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	serverCreds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert(ca.IssueServer("deltaeds"))},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})
	clientCreds := credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{cert(ca.IssueClient("envoy-client"))},
		RootCAs:      ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	})

	f := newFake(t, grpc.Creds(serverCreds))
	c := startClient(t, f, Config{Creds: clientCreds})
	c.Subscribe("a")
	fs := f.nextStream(t)
	fs.recv(t)

	p, ok := peer.FromContext(fs.ctx)
	if !ok {
		t.Fatal("no peer on the server stream")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 || info.State.PeerCertificates[0].Subject.CommonName != "envoy-client" {
		t.Fatalf("server did not see the client certificate: %#v", p.AuthInfo)
	}
	if got := fs.exchange(t, resp("n1", nil, res(t, "a", "v1"))); !proto.Equal(got, ackOf("n1")) {
		t.Fatalf("got %v, want ACK of n1", got)
	}
}
