/* server/version.h — what this build is: the release version (the VERSION
 * file) and the git commit it was built from ("…-dirty" with uncommitted
 * changes, "unknown" outside a git checkout). Defined in the generated
 * $(BUILD)/gen/version.c (scripts/gen-version.sh), linked into the mlaserve
 * binary only. Shown by `mlaserve --version`, `GET /version`, the serve banner
 * and the `mlaserve_build_info` metric. */
#ifndef MS_VERSION_H
#define MS_VERSION_H

extern const char mlaserve_version[];
extern const char mlaserve_commit[];

#endif
