# A stand-in for the official redis:7 image where no registry is reachable: Debian's Redis 7 on
# the test's offline Debian base; like the official image, data in /data, protected mode off when
# no config file is given (it listens on the compose network only), run as the redis user.
ARG BASE
FROM ${BASE}
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["sh", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["redis-server"]
