/* version.h - the one place tide's version is written. */
#ifndef TIDE_VERSION_H
#define TIDE_VERSION_H

#define TIDE_VERSION "0.1.0"

#endif
