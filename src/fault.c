/* The fault-injection hooks of the test build (see fault.h). Empty in the production build. */
#include "fault.h"

#ifdef UG_FAULT_INJECTION
int (*ug__fault_alloc_hook)(size_t size);
uint64_t (*ug__fault_clock_hook)(void);
#else
typedef int ug__no_fault_hooks; /* ISO C wants a declaration in every translation unit */
#endif
