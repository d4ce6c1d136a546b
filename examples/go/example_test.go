package watchcache_test

import (
	"errors"
	"fmt"

	"watchcache.example/watchcache"
)

// The README's Go example.
func Example() {
	c, err := watchcache.New(nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	w, _ := c.Watch(watchcache.WatchOptions{Prefix: "/pods/"})
	defer w.Close()

	_ = c.Put("/pods/web", []byte("v1"), 10)
	_ = c.Put("/pods/web", []byte("v2"), 11)
	_ = c.Delete("/pods/web", 12)

	for rev := int64(10); rev <= 12; rev++ {
		kv, err := c.Get("/pods/web", rev)
		if errors.Is(err, watchcache.ErrNotFound) {
			fmt.Printf("rev %d: not found\n", rev)
			continue
		}
		fmt.Printf("rev %d: %s (version %d)\n", rev, kv.Value, kv.Version)
	}
	for i := 0; i < 3; i++ {
		ev := <-w.Events()
		fmt.Println(ev.Type, ev.Revision, ev.KV.Key)
	}
	_ = c.Compact(11)
	_, err = c.Get("/pods/web", 10)
	fmt.Println(errors.Is(err, watchcache.ErrCompacted), err)
	// Output:
	// rev 10: v1 (version 1)
	// rev 11: v2 (version 2)
	// rev 12: not found
	// ADDED 10 /pods/web
	// MODIFIED 11 /pods/web
	// DELETED 12 /pods/web
	// true watchcache: view begin: revision compacted
}
