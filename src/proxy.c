/* Placeholder: replaced by the fault proxy engine. */
#include "mkh.h"
