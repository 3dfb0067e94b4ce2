package envoysim_test

import (
	"context"
	"fmt"
	"time"

	"github.com/deltaeds/deltaeds/envoysim"
)

// A test starts a simulated Envoy, subscribes to clusters, waits for the
// server to deliver them and checks that the server broke no rule.
func Example() {
	c := envoysim.New(envoysim.Config{
		Target:  "127.0.0.1:18000", // the server under test
		NodeID:  "envoy-1",
		Cluster: "edge",
	})
	if err := c.Start(context.Background()); err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	c.Subscribe("default/web", "default/api")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.WaitFor(ctx, func(s envoysim.State) bool {
		_, web := s.Held("default/web")
		return web && (s.Removed("default/api") || s.HeldLen() == 2)
	})
	if err != nil {
		fmt.Println(err)
	}
	for _, v := range c.Violations() {
		fmt.Println("violation:", v)
	}
}
