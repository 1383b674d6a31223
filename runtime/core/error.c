#include "error.h"

#include <stdarg.h>
#include <stdio.h>

int tide_error_set(struct tide_error *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

void tide_error_clear(struct tide_error *err)
{
    if (err == NULL)
        return;
    err->code = TIDE_OK;
    err->message[0] = '\0';
}

const char *tide_error_name(int code)
{
    switch (code) {
    case TIDE_OK: return "OK";
    case TIDE_EINVAL: return "EINVAL";
    case TIDE_ENOMEM: return "ENOMEM";
    case TIDE_ECRYPTO: return "ECRYPTO";
    case TIDE_ENOTFOUND: return "ENOTFOUND";
    case TIDE_EIO: return "EIO";
    case TIDE_ELIMIT: return "ELIMIT";
    case TIDE_EHTTP: return "EHTTP";
    case TIDE_EURL: return "EURL";
    case TIDE_ECONFLICT: return "ECONFLICT";
    case TIDE_EBUSY: return "EBUSY";
    case TIDE_ESTORE: return "ESTORE";
    case TIDE_ESCHEMA: return "ESCHEMA";
    case TIDE_EKAFKA: return "EKAFKA";
    case TIDE_EFULL: return "EFULL";
    default: return "EUNKNOWN";
    }
}
