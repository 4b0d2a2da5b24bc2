/*
 * handoff-forward: the in-container end of Handoff's model gateway and egress proxy.
 *
 * A sandbox container runs with no network at all (network_mode "none": only a loopback
 * interface). The host's gateway and proxy listen on Unix sockets in a directory bind-mounted
 * into the container; this helper listens on 127.0.0.1 ports inside the container and relays
 * every TCP connection to one of those sockets, so that ANTHROPIC_BASE_URL, OPENAI_BASE_URL and
 * HTTPS_PROXY can be ordinary http://127.0.0.1:<port> URLs.
 *
 *   handoff-forward -l 127.0.0.1:8080=/handoff/gw/model.sock \
 *                   -l 127.0.0.1:3128=/handoff/gw/egress.sock -- <command> [args...]
 *
 * The listeners are bound before anything else runs (so the command never races them); then a
 * process of its own serves them (re-parented to the container's init) while this process execs
 * <command>; it ends with the container, whose init stops everything when the command ends. Without
 * "-- <command>" the relay runs in the foreground (used by the benchmark and the tests).
 *
 * It is static (gcc -static) so that one binary serves every image: busybox, Debian, Node.js.
 * It carries no secret and decides nothing: the host's end checks every request.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_LISTENERS 8
#define BUF_SIZE 65536

struct listener {
    int fd;
    struct sockaddr_un target;
};

struct relay {
    int client;
    struct sockaddr_un target;
};

static struct listener listeners[MAX_LISTENERS];
static int n_listeners;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "handoff-forward: %s%s%s: %s\n", what, detail ? " " : "", detail ? detail : "",
            strerror(errno));
    exit(111);
}

static int parse_listen(const char *spec) {
    /* HOST:PORT=PATH */
    char host[64];
    const char *colon = strchr(spec, ':'), *eq = strchr(spec, '=');
    if (!colon || !eq || eq < colon || (size_t)(colon - spec) >= sizeof host) return -1;
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    int port = atoi(colon + 1);
    const char *path = eq + 1;
    if (port <= 0 || port > 65535 || strlen(path) >= sizeof listeners[0].target.sun_path) return -1;
    if (n_listeners == MAX_LISTENERS) return -1;

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) return -1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket", NULL);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind", spec);
    if (listen(fd, 128) < 0) die("listen", spec);

    struct listener *l = &listeners[n_listeners++];
    l->fd = fd;
    memset(&l->target, 0, sizeof l->target);
    l->target.sun_family = AF_UNIX;
    strcpy(l->target.sun_path, path);
    return 0;
}

/* Copy what is readable from one socket to the other; returns 0 at end of input, -1 on error. */
static int pump(int from, int to, char *buf) {
    ssize_t n = read(from, buf, BUF_SIZE);
    if (n == 0) return 0;
    if (n < 0) return (errno == EINTR || errno == EAGAIN) ? 1 : -1;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        off += w;
    }
    return 1;
}

static void *serve(void *arg) {
    struct relay *r = arg;
    char *buf = malloc(BUF_SIZE);
    int upstream = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (!buf || upstream < 0 || connect(upstream, (struct sockaddr *)&r->target, sizeof r->target) < 0) {
        /* Nothing listens (the run ended): the client sees the connection close at once. */
        if (upstream >= 0) close(upstream);
        goto done;
    }
    struct pollfd fds[2] = {{.fd = r->client, .events = POLLIN}, {.fd = upstream, .events = POLLIN}};
    int open_in[2] = {1, 1};
    while (open_in[0] || open_in[1]) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (!open_in[i] || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            int other = i ? r->client : upstream;
            int rc = pump(fds[i].fd, other, buf);
            if (rc < 0) goto closed;
            if (rc == 0) { /* half-close: pass the end of input on, keep the other direction */
                open_in[i] = 0;
                fds[i].fd = -1;
                shutdown(other, SHUT_WR);
            }
        }
    }
closed:
    close(upstream);
done:
    close(r->client);
    free(buf);
    free(r);
    return NULL;
}

static void relay_forever(void) {
    struct pollfd fds[MAX_LISTENERS];
    for (int i = 0; i < n_listeners; i++) fds[i] = (struct pollfd){.fd = listeners[i].fd, .events = POLLIN};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (;;) {
        if (poll(fds, (nfds_t)n_listeners, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll", NULL);
        }
        for (int i = 0; i < n_listeners; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            int client = accept4(listeners[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (client < 0) continue;
            int one = 1; /* streamed model output comes in small pieces: no Nagle delay */
            setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            struct relay *r = malloc(sizeof *r);
            pthread_t thread;
            if (!r) {
                close(client);
                continue;
            }
            r->client = client;
            r->target = listeners[i].target;
            if (pthread_create(&thread, &attr, serve, r) != 0) {
                close(client);
                free(r);
            }
        }
    }
}

int main(int argc, char **argv) {
    int i = 1;
    for (; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        }
        if (strcmp(argv[i], "-l") == 0 && i + 1 < argc) {
            if (parse_listen(argv[++i]) < 0) {
                fprintf(stderr, "handoff-forward: bad listen spec %s (want 127.0.0.1:PORT=/path.sock)\n", argv[i]);
                return 2;
            }
            continue;
        }
        fprintf(stderr, "usage: handoff-forward -l HOST:PORT=SOCKET ... [-- command args...]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (i >= argc) { /* no command: relay in the foreground */
        relay_forever();
        return 0;
    }
    /* Double fork: the relay is re-parented to the container's init, so the command never sees
       (or waits for) a child it did not start; it ends with the container's PID namespace. */
    pid_t child = fork();
    if (child < 0) die("fork", NULL);
    if (child == 0) {
        pid_t relay = fork();
        if (relay < 0) _exit(111);
        if (relay == 0) {
            setsid();
            relay_forever();
        }
        _exit(0);
    }
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("fork relay", NULL);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[i], argv + i);
    die("exec", argv[i]);
    return 127;
}
