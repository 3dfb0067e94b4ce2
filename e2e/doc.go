// Package e2e proves deltaeds the way an operator sees it: the real bin/deltaeds, built from
// this tree, runs as a child process against a real etcd, kube-apiserver and
// kube-controller-manager (internal/controlplane, binaries from `make testbin`), whose real
// EndpointSlice controller turns real Services and Pods into EndpointSlices, while the tests
// play the kubelet and the Deployment controller and a fleet of Envoy-like clients (envoysim)
// holds what deltaeds serves.
//
// The package has no code of its own: its tests are the scenarios below, one test each,
// sharing one control plane (a namespace per scenario). The first nine are issue 5's:
//
//  1. TestEndpointsFollowPods: the right CLA (priorities, zones, ports) for every client, then
//     pods turning unready, ready, terminating and gone.
//  2. TestRollingRestartNeverEmpty: a 100-pod Deployment-style rolling restart (maxSurge 25%,
//     maxUnavailable 0); at no applied response does any client hold the Service's CLA with
//     zero usable endpoints, and at the end every client holds exactly the new pods.
//  3. TestServiceDeleted: an empty CLA at once, the removal after the grace period (to wildcard
//     subscribers only: a client that subscribed by name keeps routing to nothing), and a
//     Service re-created within the grace period comes back without a removal.
//  4. TestAPIServerOutage: kube-apiserver stopped for 30 s; streams stay open, a client joining
//     during the outage gets the last known endpoints, changes after it reach everyone.
//  5. TestRestartAndReplicas: a client reconnecting with initial_resource_versions to a
//     restarted process or to another replica receives nothing when nothing changed and
//     exactly the changed CLAs otherwise.
//  6. TestStalledClient: a client that stops reading delays no one, deltaeds' memory stays
//     bounded, and the client is caught up once it reads again.
//  7. TestNACKingClient: NACKs are counted in /metrics, not answered by a resend loop, and
//     affect no other client.
//  8. TestMutualTLS: clients without a valid certificate are refused, with one they are served.
//  9. TestHostileInput: FQDN and unlabelled slices, a Service with 1,000 slices, a client
//     subscribing to a million names, garbage requests; clear errors, and everyone else is
//     served throughout.
//
// Later issues added:
//
//   - TestSubscriptionLifecycle (lifecycle_test.go): a client's subscriptions as clusters come
//     and go.
//   - TestAbsentNamesRouteNothing (s10): names subscribed by name without a resource (a typo, a
//     deleted Service) are served empty CLAs, never bare removals, which Envoy ignores.
//   - TestDualStackOneHostPerPod (s11): a dual-stack Service is one host per pod (the other
//     family in additional_addresses), and --ip-family=ipv4 sends no IPv6.
//   - TestTopologyAwareEndpoints (s13): trafficDistribution PreferSameZone hinted by the real
//     EndpointSlice controller: each client's zone first, the other zones next, terminating
//     pods last; a client telling only its node gets its Node's zone (--zone-from-node), one
//     telling nothing the plain CLA; a zone without pods fails over and back; a replica switch
//     resends nothing; internalTrafficPolicy Local on two nodes (--internal-traffic-policy).
//
// The s12 files are issue 13's faults under load, each reporting its figures in the test log
// (README, Reliability):
//
//   - TestAPIServerRecovery: the first EndpointSlice change after a 20 s kube-apiserver outage
//     reaches every client (how long after /readyz answers is logged).
//   - TestAPIServerFlapping: kube-apiserver down 5 s / up 5 s for a minute while Services roll:
//     no restart, no reconnect, no empty CLA, removal or resend; convergence after.
//   - TestWatchExpiredRelist: etcd compacted past deltaeds' watch: the 410 relist sends nothing.
//   - TestBlackholedClient: connections black-holed by a proxy end by keepalive on both sides;
//     the clients reconnect and get only what changed.
//   - TestKillMidRollout: a replica SIGKILLed mid rollout, the other takes over; no client routes
//     again to an endpoint it moved off, and all end on the new pods.
//   - TestConnectionStorm: 2,000 clients reconnect at once declaring their versions: all served,
//     nothing resent; first-answer latencies logged.
//
// The s12 scenarios write their EndpointSlices by hand (as for Services without selectors),
// except TestKillMidRollout, so that what they measure is deltaeds and not
// kube-controller-manager, whose informers back off on their own after an API-server outage.
//
// bugs_test.go keeps a regression test for each bug in deltaeds that these runs found.
//
// Every scenario also checks that the clients saw no protocol violation, that deltaeds exits
// cleanly on SIGTERM, and that it leaves no goroutine behind; TestMain checks that no child
// process outlives the run. Set DELTAEDS_E2E_BIN to test a prebuilt binary and
// DELTAEDS_E2E_RACE=1 to build deltaeds with the race detector. `go test -short` skips them.
//
// What it must never do: write EndpointSlices for Services with selectors (the controller
// does), assert on timing (waits have generous deadlines; measurements are logged), or share
// state between scenarios other than the control plane and its nodes.
package e2e
