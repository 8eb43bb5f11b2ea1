/* keeps st_testutil non-empty before any helper exists */
typedef int st_testutil_empty_t;
