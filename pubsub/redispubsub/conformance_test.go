package redispubsub_test

import (
	"testing"

	"github.com/switchboard-go/switchboard/pubsub"
	"github.com/switchboard-go/switchboard/pubsub/pubsubtest"
	"github.com/switchboard-go/switchboard/pubsub/redispubsub"
)

func TestConformance(t *testing.T) {
	pubsubtest.RunWith(t, pubsubtest.Options{
		NewBackend: func(t *testing.T) pubsub.Backend {
			return newBroker(t, newClient(t), namespace(t))
		},
		NewSmallHistory: func(t *testing.T, n int) pubsub.Backend {
			return newBroker(t, newClient(t), namespace(t), redispubsub.Retention(n, 0), redispubsub.ExactRetention())
		},
		FeedBlocks: true,
	})
}
