/* The ceiling line: a minimal FastCGI responder on libfcgi. It reads the whole request body and
 * drops it, then answers with a line of text. Usage: fcgi_c_responder SOCKET_PATH [PROCESSES] */
#include <fcgiapp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s SOCKET_PATH [PROCESSES]\n", argv[0]);
        return 2;
    }
    int processes = argc == 3 ? atoi(argv[2]) : 1;
    if (FCGX_Init() != 0)
        return 1;
    int listen_fd = FCGX_OpenSocket(argv[1], 1024);
    if (listen_fd < 0) {
        fprintf(stderr, "cannot listen on %s\n", argv[1]);
        return 100;
    }
    for (int i = 1; i < processes; i++) /* the same worker count as the other servers */
        if (fork() == 0)
            break;
    FCGX_Request request;
    FCGX_InitRequest(&request, listen_fd, 0);
    static char buffer[256 * 1024];
    while (FCGX_Accept_r(&request) >= 0) {
        long long total = 0;
        int n;
        while ((n = FCGX_GetStr(buffer, sizeof buffer, request.in)) > 0)
            total += n;
        if (total)
            FCGX_FPrintF(request.out, "Content-Type: text/plain\r\n\r\nread %lld bytes\n", total);
        else
            FCGX_FPrintF(request.out, "Content-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello world\n");
        FCGX_Finish_r(&request);
    }
    return 0;
}
