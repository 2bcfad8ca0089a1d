/* minimal.c — the smallest evpol program; also compiled against an installed
 * copy by lib/dist/test-install.sh to prove `pkg-config evpol` works. */
#include <evpol.h>
#include <stdio.h>

int main(void)
{
    evpol_error err;
    evpol_loop *loop;
    if (evpol_new_event_loop(&loop, &err) != 0) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    int ok = evpol_loop_is_closed(loop) == 0 && evpol_loop_close(loop, &err) == 0;
    evpol_loop_unref(loop);
    puts(ok ? "evpol works" : "evpol failed");
    return ok ? 0 : 1;
}
