// A HashiCorp memberlist node for cairn's interoperability tests.
//
// It joins (or seeds) a cluster and prints one JSON object per line on
// stdout: {"event":"join"|"leave"|"update","node":...} for every
// membership change, and {"event":"members","alive":[...]} every 100ms.
// It leaves gracefully when its stdin closes or says "leave", and exits
// at once on SIGKILL (which is how the tests crash it).
//
// Built by the test from Debian's golang-go and
// golang-github-hashicorp-memberlist-dev, offline, in GOPATH mode.
package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

var out = struct {
	sync.Mutex
	enc *json.Encoder
}{enc: json.NewEncoder(os.Stdout)}

func emit(v map[string]interface{}) {
	out.Lock()
	defer out.Unlock()
	out.enc.Encode(v)
}

type events struct{}

func (events) NotifyJoin(n *memberlist.Node) {
	emit(map[string]interface{}{"event": "join", "node": n.Name, "addr": n.Address()})
}
func (events) NotifyLeave(n *memberlist.Node) {
	emit(map[string]interface{}{"event": "leave", "node": n.Name, "state": int(n.State)})
}
func (events) NotifyUpdate(n *memberlist.Node) {
	emit(map[string]interface{}{"event": "update", "node": n.Name})
}

type conflicts struct{}

func (conflicts) NotifyConflict(existing, other *memberlist.Node) {
	emit(map[string]interface{}{"event": "conflict", "node": existing.Name, "ours": existing.Address(), "theirs": other.Address()})
}

func main() {
	name := flag.String("name", "go-peer", "node name")
	bind := flag.String("bind", "127.0.0.1", "bind address")
	port := flag.Int("port", 0, "gossip port (0: pick one)")
	join := flag.String("join", "", "comma-separated host:port list to join")
	probe := flag.Duration("probe-interval", 200*time.Millisecond, "probe interval")
	probeTimeout := flag.Duration("probe-timeout", 100*time.Millisecond, "probe timeout")
	gossip := flag.Duration("gossip-interval", 50*time.Millisecond, "gossip interval")
	pushPull := flag.Duration("push-pull-interval", 2*time.Second, "push/pull interval")
	suspicion := flag.Int("suspicion-mult", 3, "suspicion multiplier")
	compress := flag.Bool("compress", true, "LZW-compress messages (memberlist's default)")
	verbose := flag.Bool("v", false, "memberlist logs on stderr")
	key := flag.String("key", "", "gossip encryption key, base64 (empty: plain)")
	flag.Parse()

	c := memberlist.DefaultLocalConfig()
	c.Name = *name
	c.BindAddr = *bind
	c.BindPort = *port
	c.AdvertisePort = *port
	c.ProbeInterval = *probe
	c.ProbeTimeout = *probeTimeout
	c.GossipInterval = *gossip
	c.PushPullInterval = *pushPull
	c.SuspicionMult = *suspicion
	c.EnableCompression = *compress
	c.Events = events{}
	c.Conflict = conflicts{}
	if *key != "" {
		k, err := base64.StdEncoding.DecodeString(*key)
		if err != nil {
			log.Fatalf("key: %v", err)
		}
		c.SecretKey = k
	}
	if !*verbose {
		c.LogOutput = ioutil.Discard
	}
	m, err := memberlist.Create(c)
	if err != nil {
		log.Fatalf("create: %v", err)
	}
	self := m.LocalNode()
	emit(map[string]interface{}{"event": "ready", "node": self.Name, "addr": self.Address()})
	if *join != "" {
		n, err := m.Join(strings.Split(*join, ","))
		if err != nil {
			emit(map[string]interface{}{"event": "join-error", "error": err.Error()})
		} else {
			emit(map[string]interface{}{"event": "joined", "count": n})
		}
	}
	go func() {
		for range time.Tick(100 * time.Millisecond) {
			var alive []string
			for _, n := range m.Members() {
				alive = append(alive, n.Name)
			}
			sort.Strings(alive)
			emit(map[string]interface{}{"event": "members", "alive": alive, "health": m.GetHealthScore()})
		}
	}()
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if strings.TrimSpace(in.Text()) == "leave" {
			break
		}
	}
	if err := m.Leave(5 * time.Second); err != nil {
		fmt.Fprintf(os.Stderr, "leave: %v\n", err)
	}
	emit(map[string]interface{}{"event": "left"})
	m.Shutdown()
}
