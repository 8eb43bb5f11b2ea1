/* st-synth: placeholder until the synthetic model writer lands. */
#include <stdio.h>

int main(void) {
    fprintf(stderr, "st-synth: not implemented yet\n");
    return 1;
}
