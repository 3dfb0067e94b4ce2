package harness

import (
	"context"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// PollInterval is how often Eventually checks its condition.
const PollInterval = 50 * time.Millisecond

// Eventually checks cond at once and then every PollInterval until it returns nil or ctx ends; it
// returns ctx's error with cond's last error.
func Eventually(ctx context.Context, cond func() error) error {
	var last error
	err := wait.PollUntilContextCancel(ctx, PollInterval, true, func(context.Context) (bool, error) {
		last = cond()
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%w (last: %v)", err, last)
	}
	return nil
}
