"""The test servers themselves: the private Redis is real, restartable and keeps its data."""

import redis


def test_private_redis_is_real_and_restartable(redis_server, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.xadd("contrail:test", {"k": "v"})
    info = client.info("server")
    assert info["tcp_port"] == redis_server.port
    redis_server.stop()
    redis_server.start()
    client = redis.Redis.from_url(redis_url)
    assert client.xlen("contrail:test") == 1  # AOF kept the entry across the restart
