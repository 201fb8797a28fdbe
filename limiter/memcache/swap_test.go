package memcache
