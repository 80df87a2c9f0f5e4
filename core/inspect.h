/*
 * inspect.h - prints what a plan would show, as text or JSON.
 */
#ifndef RFS_INSPECT_H
#define RFS_INSPECT_H

#include <stdio.h>

#include "plan.h"

/** Human-readable listing of sources, files, tensors, ignored keys and notes. */
void rfs_inspect_text(const struct rfs_plan *p, FILE *out);
/** The same as one JSON document; 0 or RFS_E_NOMEM / RFS_E_IO (writing @out) with @err set. */
enum rfs_code rfs_inspect_json(const struct rfs_plan *p, FILE *out, struct rfs_err *err);

/**
 * A recipe's plan: computes every merged tensor's whole-tensor numbers
 * (reading all its inputs once), which both listings then show.
 */
enum rfs_code rfs_inspect_numbers(const struct rfs_plan *p, struct rfs_err *err);

#endif
