module watchcache.example/watchcache

go 1.19
