// podgen.go - a byte-for-byte port of bench/podgen.h (see there for the
// design).  Any change to one must be made to the other;
// bench/podgen_check.sh compares their output.

package main

import "strconv"

const (
	podgenMaxPods     = 14348907 // 27^5 distinct name suffixes
	podgenDeployments = 4096
	podgenEpoch       = 1764000000 // 2025-11-24T16:00:00Z
)

type podgen struct{ seed uint64 }

type rng struct{ s uint64 }

func (r *rng) next() uint64 {
	r.s += 0x9E3779B97F4A7C15
	z := r.s
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return z ^ (z >> 31)
}

func (r *rng) below(n uint64) uint64 { return r.next() % n }

func stream(seed, domain, a, b uint64) rng {
	r := rng{seed ^ (domain * 0xD1B54A32D192ED03)}
	r.s = r.next() ^ a
	r.s = r.next() ^ b
	r.next()
	return r
}

var (
	pgAlnum = "bcdfghjklmnpqrstvwxz2456789"
	pgApps  = []string{
		"api-gateway", "checkout", "cart", "payments", "ledger", "search", "indexer",
		"recommender", "catalog", "inventory", "shipping", "notifications", "mailer",
		"auth", "session-store", "user-profile", "billing", "invoicing", "reporting",
		"metrics-agent", "log-forwarder", "ingress-nginx", "coredns", "kube-proxy",
		"redis", "memcached", "postgres", "kafka", "zookeeper", "etcd-backup",
		"image-resizer", "thumbnailer", "video-encoder", "feature-flags", "scheduler-ext",
		"web-frontend", "admin-portal", "graphql", "websocket-hub", "rate-limiter",
		"fraud-detector", "geo-service", "pricing", "promotions", "reviews", "wishlist",
		"analytics-collector", "etl-worker", "ml-serving", "batch-runner", "cron-janitor",
		"config-server", "vault-agent", "cert-manager", "external-dns", "node-exporter",
		"prometheus", "alertmanager", "grafana", "loki", "tempo", "jaeger-collector",
		"opa", "istio-proxy"}
	pgTeams = []string{
		"shop", "payments", "identity", "platform", "data", "ml", "media", "search",
		"growth", "support", "infra", "observability", "security", "logistics", "finance",
		"marketing"}
	pgEnvs       = []string{"prod", "staging", "dev", "canary"}
	pgTiers      = []string{"frontend", "backend", "cache", "database", "worker", "system"}
	pgZones      = 6
	pgRegistries = []string{
		"registry.k8s.io", "docker.io/library", "ghcr.io/acme", "quay.io/acme",
		"123456789012.dkr.ecr.eu-west-1.amazonaws.com"}
	pgQos = []string{"Guaranteed", "Burstable", "BestEffort"}
	pgCPU = []string{"50m", "100m", "250m", "500m", "1", "2"}
	pgMem = []string{"64Mi", "128Mi", "256Mi", "512Mi", "1Gi", "2Gi"}
)

func appendHex(b []byte, r *rng, digits int) []byte {
	const hx = "0123456789abcdef"
	var w uint64
	for k := 0; k < digits; k++ {
		if k%16 == 0 {
			w = r.next()
		}
		b = append(b, hx[w&15])
		w >>= 4
	}
	return b
}

func appendAlnum(b []byte, r *rng, digits int) []byte {
	for k := 0; k < digits; k++ {
		b = append(b, pgAlnum[r.below(27)])
	}
	return b
}

func appendUUID(b []byte, r *rng) []byte {
	for k, n := range []int{8, 4, 4, 4, 12} {
		if k > 0 {
			b = append(b, '-')
		}
		b = appendHex(b, r, n)
	}
	return b
}

func appendU(b []byte, v uint64) []byte { return strconv.AppendUint(b, v, 10) }

func appendUW(b []byte, v uint64, digits int) []byte {
	var tmp [20]byte
	for k := digits - 1; k >= 0; k-- {
		tmp[k] = byte('0' + v%10)
		v /= 10
	}
	return append(b, tmp[:digits]...)
}

func appendIP(b []byte, a, x, y, z uint64) []byte {
	b = appendU(b, a)
	b = append(b, '.')
	b = appendU(b, x)
	b = append(b, '.')
	b = appendU(b, y)
	b = append(b, '.')
	return appendU(b, z)
}

// appendTime writes a quoted RFC 3339 UTC time (Hinnant's civil_from_days).
func appendTime(b []byte, t uint64) []byte {
	days, sod := t/86400, t%86400
	z := days + 719468
	era := z / 146097
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d := doy - (153*mp+2)/5 + 1
	m := mp - 9
	if mp < 10 {
		m = mp + 3
	}
	y := yoe + era*400
	if m <= 2 {
		y++
	}
	b = append(b, '"')
	b = appendUW(b, y, 4)
	b = append(b, '-')
	b = appendUW(b, m, 2)
	b = append(b, '-')
	b = appendUW(b, d, 2)
	b = append(b, 'T')
	b = appendUW(b, sod/3600, 2)
	b = append(b, ':')
	b = appendUW(b, sod/60%60, 2)
	b = append(b, ':')
	b = appendUW(b, sod%60, 2)
	return append(b, 'Z', '"')
}

type deploy struct {
	app, team, env, tier, reg, major, minor, patch, cpu, mem, qos uint64
	created                                                       uint64
	hash                                                          [10]byte
	uid                                                           [36]byte
}

func (g *podgen) deployOf(d uint64) deploy {
	r := stream(g.seed, 1, d, 0)
	var o deploy
	o.app = r.below(uint64(len(pgApps)))
	o.team = r.below(uint64(len(pgTeams)))
	o.env = r.below(uint64(len(pgEnvs)))
	o.tier = r.below(uint64(len(pgTiers)))
	o.reg = r.below(uint64(len(pgRegistries)))
	o.major = r.below(4)
	o.minor = r.below(40)
	o.patch = r.below(20)
	o.cpu = r.below(uint64(len(pgCPU)))
	o.mem = r.below(uint64(len(pgMem)))
	o.qos = r.below(uint64(len(pgQos)))
	o.created = podgenEpoch - r.below(90*86400)
	appendAlnum(o.hash[:0], &r, 10)
	appendUUID(o.uid[:0], &r)
	return o
}

func (g *podgen) deployIndex(i uint64) uint64 {
	r := stream(g.seed, 2, i, 0)
	return r.below(podgenDeployments)
}

func appendNamespace(b []byte, d *deploy) []byte {
	b = append(b, pgTeams[d.team]...)
	b = append(b, '-')
	return append(b, pgEnvs[d.env]...)
}

func (g *podgen) appendName(b []byte, d *deploy, i uint64) []byte {
	// 7368787 is prime to 27^5, so i -> x is a bijection on [0, 27^5).
	x := (i%podgenMaxPods*7368787 + g.seed%podgenMaxPods) % podgenMaxPods
	b = append(b, pgApps[d.app]...)
	b = append(b, '-')
	b = append(b, d.hash[:]...)
	b = append(b, '-')
	for k := 0; k < 5; k++ {
		b = append(b, pgAlnum[x%27])
		x /= 27
	}
	return b
}

// appendKey appends the key of pod i.
func (g *podgen) appendKey(b []byte, i uint64) []byte {
	d := g.deployOf(g.deployIndex(i))
	b = append(b, "/registry/pods/"...)
	b = appendNamespace(b, &d)
	b = append(b, '/')
	return g.appendName(b, &d, i)
}

// appendPod appends version gen (>= 1) of pod i with resourceVersion rev.
func (g *podgen) appendPod(b []byte, i, gen uint64, rev int64) []byte {
	r := stream(g.seed, 3, i, 0)
	v := stream(g.seed, 4, i, gen)
	node := r.below(2000)
	zone := node % uint64(pgZones)
	d := g.deployOf(g.deployIndex(i))
	created := d.created + r.below(30*86400)
	started := created + 1 + r.below(20)
	ip1 := 64 + r.below(64)
	ip2 := r.below(256)
	ip3 := 1 + r.below(254)
	app := pgApps[d.app]

	b = append(b, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"`...)
	b = g.appendName(b, &d, i)
	b = append(b, `","namespace":"`...)
	b = appendNamespace(b, &d)
	b = append(b, `","uid":"`...)
	b = appendUUID(b, &r)
	b = append(b, `","resourceVersion":"`...)
	b = appendU(b, uint64(rev))
	b = append(b, `","creationTimestamp":`...)
	b = appendTime(b, created)
	b = append(b, `,"labels":{"app":"`...)
	b = append(b, app...)
	b = append(b, `","pod-template-hash":"`...)
	b = append(b, d.hash[:]...)
	b = append(b, `","tier":"`...)
	b = append(b, pgTiers[d.tier]...)
	b = append(b, `","rollout":"`...)
	b = appendU(b, gen)
	b = append(b, `"},"annotations":{"kubectl.kubernetes.io/restartedAt":`...)
	b = appendTime(b, started+v.below(86400)+gen*60)
	b = append(b, `},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"`...)
	b = append(b, app...)
	b = append(b, '-')
	b = append(b, d.hash[:]...)
	b = append(b, `","uid":"`...)
	b = append(b, d.uid[:]...)
	b = append(b, `","controller":true}]},"spec":{"containers":[{"name":"`...)
	b = append(b, app...)
	b = append(b, `","image":"`...)
	b = append(b, pgRegistries[d.reg]...)
	b = append(b, '/')
	b = append(b, app...)
	b = append(b, ":v"...)
	b = appendU(b, d.major)
	b = append(b, '.')
	b = appendU(b, d.minor)
	b = append(b, '.')
	b = appendU(b, d.patch)
	b = append(b, `","resources":{"requests":{"cpu":"`...)
	b = append(b, pgCPU[d.cpu]...)
	b = append(b, `","memory":"`...)
	b = append(b, pgMem[d.mem]...)
	b = append(b, `"}}}],"nodeName":"ip-10-`...)
	b = appendU(b, node/250)
	b = append(b, '-')
	b = appendU(b, node%250)
	b = append(b, '-')
	b = appendU(b, 1+zone)
	b = append(b, `.ec2.internal"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True","lastTransitionTime":`...)
	b = appendTime(b, started+v.below(3600))
	b = append(b, `}],"hostIP":"`...)
	b = appendIP(b, 10, node/250, node%250, 1+zone)
	b = append(b, `","podIP":"`...)
	b = appendIP(b, 100, ip1, ip2, ip3)
	b = append(b, `","containerStatuses":[{"ready":true,"restartCount":`...)
	b = appendU(b, gen-1)
	b = append(b, `,"containerID":"containerd://`...)
	b = appendHex(b, &v, 64)
	b = append(b, `"}],"qosClass":"`...)
	b = append(b, pgQos[d.qos]...)
	return append(b, `"}}`...)
}
